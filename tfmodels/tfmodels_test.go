package tfmodels

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

func TestLoadReadsEverySignatureFromTheMetaGraph(t *testing.T) {
	m := loadMulti(t, Options{})
	var got []string
	for _, s := range m.Signatures() {
		got = append(got, s.Key)
	}
	if want := []string{"fixed_batch", "serving_default", "types", "unknown_rank"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("signatures %v, want %v", got, want)
	}
	tests := []struct {
		sig, key    string
		input       bool
		dtype       DType
		shape       []int64
		unknownRank bool
	}{
		{"serving_default", "x", true, Float32, []int64{-1, 3}, false},
		{"serving_default", "y", true, Float32, []int64{-1, 3}, false},
		{"serving_default", "sum", false, Float32, []int64{-1, 3}, false},
		{"types", "u8", true, Uint8, []int64{-1, 4}, false},
		{"types", "i32", true, Int32, []int64{-1}, false},
		{"types", "i64", true, Int64, []int64{-1}, false},
		{"types", "s", true, String, []int64{-1}, false},
		{"types", "s_upper", false, String, []int64{-1}, false},
		{"types", "s_len", false, Int64, []int64{-1}, false},
		{"fixed_batch", "x", true, Float32, []int64{1, 4}, false},
		{"unknown_rank", "x", true, Float32, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.sig+"/"+tc.key, func(t *testing.T) {
			s, err := m.Signature(tc.sig)
			if err != nil {
				t.Fatal(err)
			}
			if s.MethodName != "tensorflow/serving/predict" {
				t.Errorf("method name %q", s.MethodName)
			}
			info, ok := s.Output(tc.key)
			if tc.input {
				info, ok = s.Input(tc.key)
			}
			if !ok {
				t.Fatalf("no tensor %q", tc.key)
			}
			if info.DType != tc.dtype || !reflect.DeepEqual(info.Shape, tc.shape) || info.UnknownRank != tc.unknownRank {
				t.Errorf("got %s unknownRank=%v, want %s %v unknownRank=%v", info, info.UnknownRank, tc.dtype, tc.shape, tc.unknownRank)
			}
			if info.Name == "" {
				t.Error("graph tensor name is empty")
			}
		})
	}
}

func TestRunMatchesPythonTensorFlow(t *testing.T) {
	m := loadMulti(t, Options{})
	g := filepath.Join(fixtures, "multi_golden")
	r, err := m.Runner("serving_default", []string{"x", "y"}, []string{"sum", "prod"})
	if err != nil {
		t.Fatal(err)
	}
	outs, err := r.Run(tensorFromFile(t, g+"/x.npy"), tensorFromFile(t, g+"/y.npy"))
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"sum", "prod"} {
		want, _ := readNpy(t, g+"/"+key+".npy").Float32s()
		got := mustData[float32](t, outs[i])
		if !reflect.DeepEqual(outs[i].Shape(), []int64{5, 3}) {
			t.Errorf("%s shape %v", key, outs[i].Shape())
		}
		if d := maxAbsDiff(got, want); d > 1e-6 {
			t.Errorf("%s differs from Python by %g", key, d)
		}
		outs[i].Close()
	}
}

func TestRunFeedsAndReadsEveryDType(t *testing.T) {
	m := loadMulti(t, Options{})
	g := filepath.Join(fixtures, "multi_golden")
	strs := readLines(t, g+"/s.txt")
	s, err := NewStrings([]int64{int64(len(strs))}, strs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs, err := m.Run("types", map[string]*Tensor{
		"u8": tensorFromFile(t, g+"/u8.npy"), "i32": tensorFromFile(t, g+"/i32.npy"),
		"i64": tensorFromFile(t, g+"/i64.npy"), "s": s,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, o := range outs {
			o.Close()
		}
	}()
	wantI32, _ := readNpy(t, g+"/u8_sum.npy").Int32s()
	if got := mustData[int32](t, outs["u8_sum"]); !reflect.DeepEqual(got, wantI32) {
		t.Errorf("u8_sum %v, want %v", got, wantI32)
	}
	wantSq, _ := readNpy(t, g+"/i32_sq.npy").Int32s()
	if got := mustData[int32](t, outs["i32_sq"]); !reflect.DeepEqual(got, wantSq) {
		t.Errorf("i32_sq %v, want %v", got, wantSq)
	}
	wantNeg, _ := readNpy(t, g+"/i64_neg.npy").Int64s()
	if got := mustData[int64](t, outs["i64_neg"]); !reflect.DeepEqual(got, wantNeg) {
		t.Errorf("i64_neg %v, want %v", got, wantNeg)
	}
	wantLen, _ := readNpy(t, g+"/s_len.npy").Int64s()
	if got := mustData[int64](t, outs["s_len"]); !reflect.DeepEqual(got, wantLen) {
		t.Errorf("s_len %v, want %v", got, wantLen)
	}
	upper, err := outs["s_upper"].Strings()
	if err != nil {
		t.Fatal(err)
	}
	if want := readLines(t, g+"/s_upper.txt"); !reflect.DeepEqual(upper, want) {
		t.Errorf("s_upper %q, want %q", upper, want)
	}
}

func TestConfigProtoEncodingMatchesTensorFlow(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(fixtures, "configproto.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got := Options{IntraOpThreads: 3, InterOpThreads: 2, PerSessionThreads: true}.configProto()
	if !bytes.Equal(got, want) {
		t.Fatalf("ConfigProto bytes %x, Python's %x", got, want)
	}
	if len((Options{}).configProto()) != 0 {
		t.Error("default options should serialise to an empty ConfigProto")
	}
}

func TestLoadWithThreadSettingsRuns(t *testing.T) {
	m := loadMulti(t, Options{IntraOpThreads: 1, InterOpThreads: 1, PerSessionThreads: true, Tags: []string{"serve"}})
	x, _ := NewTensorOf([]int64{1, 4}, []float32{1, 2, 3, 4})
	defer x.Close()
	out, err := m.Run("fixed_batch", map[string]*Tensor{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustData[float32](t, out["twice"]); !reflect.DeepEqual(got, []float32{2, 4, 6, 8}) {
		t.Errorf("twice = %v", got)
	}
	out["twice"].Close()
}

func TestInputBuffersAre64ByteAligned(t *testing.T) {
	for _, shape := range [][]int64{{1}, {3}, {1, 7, 7, 3}, {2, 224, 224, 3}, {0, 4}} {
		for _, dt := range []DType{Float32, Uint8, Int64} {
			tt, err := NewTensor(dt, shape...)
			if err != nil {
				t.Fatal(err)
			}
			if tt.NumElements() > 0 && tt.dataPointer()%64 != 0 {
				t.Errorf("%s %v: buffer at %#x is not 64-byte aligned", dt, shape, tt.dataPointer())
			}
			tt.Close()
		}
	}
}

func TestNewTensorIsZeroedAndRejectsBadShapes(t *testing.T) {
	tt, err := NewTensor(Float32, 4, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range mustData[float32](t, tt) {
		if v != 0 {
			t.Fatalf("element %d = %v, want 0", i, v)
		}
	}
	tt.Close()
	if _, err := NewTensor(Float32, 2, -1); err == nil {
		t.Error("negative dimension accepted")
	}
	if _, err := NewTensor(Float32, 1<<40, 1<<40); err == nil {
		t.Error("absurd shape accepted")
	}
	if _, err := NewTensorOf([]int64{2, 2}, []float32{1, 2, 3}); err == nil {
		t.Error("3 values for a 2x2 tensor accepted")
	}
	if _, err := NewTensor(DType(20), 2); err == nil {
		t.Error("unsupported dtype accepted")
	}
}

func TestTensorCloseIsIdempotentAndDataAfterCloseFails(t *testing.T) {
	tt, _ := NewTensorOf([]int64{2}, []int64{7, 8})
	if err := tt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tt.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Data[int64](tt); err == nil {
		t.Error("Data after Close returned no error")
	}
	if _, err := Data[float32](mustTensor(t, Int64, 2)); err == nil {
		t.Error("Data with the wrong element type returned no error")
	}
}

func mustTensor(t *testing.T, dt DType, shape ...int64) *Tensor {
	t.Helper()
	tt, err := NewTensor(dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.Close() })
	return tt
}

func TestConcurrentRunsOnOneRunnerGiveEachCallerItsOwnResult(t *testing.T) {
	m := loadMulti(t, Options{})
	r, err := m.Runner("serving_default", []string{"x", "y"}, []string{"prod"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				v := float32(g*1000 + i)
				x, _ := NewTensorOf([]int64{1, 3}, []float32{v, v, v})
				y, _ := NewTensorOf([]int64{1, 3}, []float32{2, 3, 4})
				outs, err := r.Run(x, y)
				x.Close()
				y.Close()
				if err != nil {
					errs <- err
					return
				}
				got, _ := Data[float32](outs[0])
				if got[0] != 2*v || got[1] != 3*v || got[2] != 4*v {
					errs <- fmt.Errorf("goroutine %d call %d: got %v for %v", g, i, got, v)
				}
				outs[0].Close()
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRunAfterCloseFailsCleanly(t *testing.T) {
	m, err := Load(multiDir(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Runner("fixed_batch", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	x := mustTensor(t, Float32, 1, 4)
	_, err = r.Run(x)
	wantError(t, err, ErrClosed, m.Dir())
	_, err = m.Runner("fixed_batch", nil, nil)
	wantError(t, err, ErrClosed)
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		if math.IsNaN(float64(a[i])) != math.IsNaN(float64(b[i])) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}
