package config

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/edgeinfer/edgeinfer/internal/signing"
	"github.com/edgeinfer/edgeinfer/tfmodels/graphcheck"
)

// Serving policies: what happens to the serving version while a new one
// loads.
const (
	// PolicyAvailability loads the new version before stopping the old, so
	// that a model is never without a serving version (TF Serving's
	// AvailabilityPreservingPolicy); it briefly holds both in memory.
	PolicyAvailability = "availability"
	// PolicyResource stops the old version before loading the new, so that
	// only one is ever in memory; frames wait meanwhile.
	PolicyResource = "resource"
)

// VersionLatest serves the newest complete version of a model.
const VersionLatest = "latest"

// Serving is how one model's versions are chosen and brought in: a
// [serving.<model>] table, or the defaults for a model without one.
type Serving struct {
	// Version is VersionLatest or one version number ("2"): the version
	// to serve.
	Version string
	// Policy is PolicyAvailability or PolicyResource.
	Policy string
	// LoadTimeout bounds loading, warm-up and validation of one version.
	LoadTimeout Duration
	// Tolerance is the largest difference allowed between a golden
	// sample's expected output and the one the version computes.
	Tolerance float64
}

// defaultServing is the Serving of a model without a [serving.<model>]
// table.
var defaultServing = Serving{
	Version:     VersionLatest,
	Policy:      PolicyAvailability,
	LoadTimeout: Duration{120 * time.Second},
	Tolerance:   1e-4,
}

// Serving returns the [serving.<model>] settings of model, or
// the defaults (latest, availability, 120s, 1e-4) if it has no table.
func (c *Config) Serving(model string) Serving {
	if s, ok := c.serving[model]; ok {
		return s
	}
	return defaultServing
}

// AllowOps lists the denied ops model may use all the same ([serving.<model>]
// allow_ops, sorted; tfmodels/graphcheck).
func (c *Config) AllowOps(model string) []string { return c.allowOps[model] }

// TrustedKeys is the content of models.trusted_keys; nil when it is not set
// (signatures are then not required).
func (c *Config) TrustedKeys() signing.Keys { return c.trustedKeys }

// servingTable is a [serving.<model>] table as written. Version is any so
// that `version = 2` (an integer) gets a message of its own.
type servingTable struct {
	Version     any      `toml:"version"`
	Policy      string   `toml:"policy"`
	LoadTimeout Duration `toml:"load_timeout"`
	Tolerance   float64  `toml:"tolerance"`
	AllowOps    []string `toml:"allow_ops"`
}

// checkServing checks the [serving.<model>] tables, applies their defaults
// into c.serving and warns of tables no pipeline's model uses.
func (c *Config) checkServing(tables map[string]servingTable) error {
	used := map[string]bool{}
	for _, p := range c.Pipelines {
		used[p.Model] = true
	}
	c.serving = map[string]Serving{}
	c.allowOps = map[string][]string{}
	for _, model := range slices.Sorted(maps.Keys(tables)) {
		t, key := tables[model], "serving."+model
		s := defaultServing
		switch v := t.Version.(type) {
		case nil:
		case string:
			if n, err := strconv.Atoi(v); v != VersionLatest && (err != nil || n < 0 || strconv.Itoa(n) != v) {
				return c.errf(key+".version", "%q is neither %q nor a version number such as \"2\"", v, VersionLatest)
			}
			s.Version = v
		default:
			return c.errf(key+".version", "must be a string, %q or a version number such as \"2\", got %v", VersionLatest, v)
		}
		if c.md.IsDefined("serving", model, "policy") {
			if t.Policy != PolicyAvailability && t.Policy != PolicyResource {
				return c.errf(key+".policy", "%q is not one of %s, %s", t.Policy, PolicyAvailability, PolicyResource)
			}
			s.Policy = t.Policy
		}
		if c.md.IsDefined("serving", model, "load_timeout") {
			if err := c.positive(key+".load_timeout", t.LoadTimeout); err != nil {
				return err
			}
			s.LoadTimeout = t.LoadTimeout
		}
		if c.md.IsDefined("serving", model, "tolerance") {
			if !(t.Tolerance > 0) || math.IsInf(t.Tolerance, 1) {
				return c.errf(key+".tolerance", "must be > 0 and finite, got %g", t.Tolerance)
			}
			s.Tolerance = t.Tolerance
		}
		for _, op := range t.AllowOps {
			if _, ok := graphcheck.Denied(op); !ok {
				return c.errf(key+".allow_ops", "%q is not an op the deny-list holds (tfmodels/graphcheck/README.md lists them); ops it does not hold need no allowing", op)
			}
		}
		if len(t.AllowOps) > 0 {
			c.allowOps[model] = slices.Sorted(slices.Values(t.AllowOps))
		}
		c.serving[model] = s
		if !used[model] {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: %s: no pipeline uses model %q", c.file, lineOf(c.lines, key), key, model))
		}
	}
	return nil
}
