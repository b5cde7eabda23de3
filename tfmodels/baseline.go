package tfmodels

/*
#include <stdlib.h>
#include <time.h>
#include "tensorflow/c/c_api.h"

// baseline_run calls TF_SessionRun iters times from C and records each
// call's wall time in ns[i]. It returns the number of calls that succeeded.
static int baseline_run(TF_Session* s, const TF_Output* in, TF_Tensor* const* inv, int nin,
                        const TF_Output* out, int nout, int iters, long long* ns, TF_Status* st) {
	TF_Tensor** outv = malloc(sizeof(TF_Tensor*) * (nout > 0 ? nout : 1));
	for (int i = 0; i < iters; i++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		TF_SessionRun(s, NULL, in, inv, nin, out, outv, nout, NULL, 0, NULL, st);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (TF_GetCode(st) != TF_OK) {
			free(outv);
			return i;
		}
		for (int j = 0; j < nout; j++) TF_DeleteTensor(outv[j]);
		ns[i] = (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
	}
	free(outv);
	return iters;
}
*/
import "C"

import "time"

// BaselineTimings runs the signature iters times straight from C, with no Go
// in between, and returns each TF_SessionRun's wall time. It is the limit
// that benchmarks compare Run against: the difference is what tfmodels adds.
func (r *Runner) BaselineTimings(inputs []*Tensor, iters int) ([]time.Duration, error) {
	if len(inputs) != len(r.inputs) {
		return nil, r.err(ErrInvalidInput, "", "wrong number of inputs")
	}
	inVals := make([]*C.TF_Tensor, len(inputs))
	for i, t := range inputs {
		if err := r.check(r.inputs[i], t); err != nil {
			return nil, err
		}
		inVals[i] = t.c
	}
	r.m.mu.RLock()
	defer r.m.mu.RUnlock()
	if r.m.session == nil || iters <= 0 || len(r.outOps) == 0 {
		return nil, r.err(ErrInvalidArgument, "", "closed model, no outputs or no iterations")
	}
	ns := make([]C.longlong, iters)
	st := newStatus()
	defer st.free()
	n := int(C.baseline_run(r.m.session, first(r.inOps), first(inVals), C.int(len(inVals)),
		&r.outOps[0], C.int(len(r.outOps)), C.int(iters), &ns[0], st.c))
	if n < iters {
		return nil, r.err(ErrRun, "", st.message())
	}
	out := make([]time.Duration, iters)
	for i, v := range ns {
		out[i] = time.Duration(v)
	}
	return out, nil
}
