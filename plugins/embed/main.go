// Command edgeinfer-embed is edgeinfer's embedding plugin: the daemon starts
// it for a model version whose edgeinfer.toml says task = "embed" (FaceNet
// and the like: an image in, an embedding out) and sends it frames, usually
// crops of faces from a detect pipeline. It answers each frame with whose
// face it is, from the pipeline's gallery folder and the identities enrolled
// at runtime, or for a stranger a cluster id that stays the same across
// restarts; optionally the L2-normalised embedding itself, and a same /
// different verdict against a reference image (README.md). The identity
// logic is package identify; this package runs the model and wires one
// identify.Identifier per pipeline.
package main

import (
	"log/slog"
	"os"

	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

func main() {
	// The daemon keeps the plugin's stderr: gallery problems and state
	// saves are logged there.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	sdk.Serve(newEmbedder())
}
