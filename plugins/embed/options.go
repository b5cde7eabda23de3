package main

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/edgeinfer/edgeinfer/plugins/common/tfplugin"
	"github.com/edgeinfer/edgeinfer/plugins/embed/identify"
)

// options are a pipeline's options (README.md). They are comparable: a
// Configure keeps a pipeline's identifier when its options did not change.
type options struct {
	Gallery          string  `json:"gallery"`           // folder of identities (identify/README.md); "": none
	StateDir         string  `json:"state_dir"`         // where clusters and runtime identities persist; "": memory only
	Threshold        float64 `json:"threshold"`         // match distance, (0, 2]; default 0.7
	ClusterThreshold float64 `json:"cluster_threshold"` // 0: clustering off; else (0, sqrt 2]; default 0.75
	TopK             int     `json:"top_k"`             // nearest identities listed, 0..maxTopK; default 3
	Exemplars        int     `json:"exemplars"`         // embeddings (and crops) kept per cluster, 1..maxExemplars; default 8
	Embedding        bool    `json:"embedding"`         // include the unit vector in the output
	Verify           string  `json:"verify"`            // reference image (PNG or JPEG): output same / different
}

// Option bounds and defaults.
const (
	defaultThreshold        = 0.7
	defaultClusterThreshold = 0.75
	defaultTopK             = 3
	defaultExemplars        = 8
	maxTopK                 = 100
	maxExemplars            = 1000
)

// parseOptions decodes one pipeline's options strictly, over the defaults.
// It only checks values: the folders and the reference image are opened
// at Configure (pipelines.go).
func parseOptions(raw json.RawMessage) (options, error) {
	o := options{Threshold: defaultThreshold, ClusterThreshold: defaultClusterThreshold, TopK: defaultTopK, Exemplars: defaultExemplars}
	if err := tfplugin.DecodeOptions(raw, &o); err != nil {
		return o, err
	}
	switch {
	case !(o.Threshold > 0 && o.Threshold <= 2):
		return o, fmt.Errorf("threshold is %g, must be in (0, 2] (distance between unit vectors)", o.Threshold)
	case !(o.ClusterThreshold >= 0 && o.ClusterThreshold <= identify.MaxClusterThreshold):
		return o, fmt.Errorf("cluster_threshold is %g, must be 0 (clustering off) or in (0, %.4f] (sqrt 2: at most orthogonal)", o.ClusterThreshold, math.Sqrt2)
	case o.TopK < 0 || o.TopK > maxTopK:
		return o, fmt.Errorf("top_k is %d, must be 0..%d", o.TopK, maxTopK)
	case o.Exemplars < 1 || o.Exemplars > maxExemplars:
		return o, fmt.Errorf("exemplars is %d, must be 1..%d", o.Exemplars, maxExemplars)
	}
	return o, nil
}

// identifies reports whether the pipeline needs an identify.Identifier: a
// gallery to match, a state to keep, or unknowns to cluster.
func (o options) identifies() bool {
	return o.Gallery != "" || o.StateDir != "" || o.ClusterThreshold > 0
}
