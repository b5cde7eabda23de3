// Command edgeinfer-video is edgeinfer's video classification plugin: it
// runs a video model's frame CNN (its features signature) once per frame,
// keeps the feature vectors in a ring buffer per stream (pipeline and
// sensor), and every stride frames classifies a clip of N vectors sampled
// from it (evenly, at a rate by capture time, or over the current scene)
// with the model's clip signature; optionally also all frames of the
// current file so far (README.md). `edgeinfer-video -sample-config` prints
// a config example.
package main

import (
	_ "embed"
	"fmt"
	"os"

	"github.com/edgeinfer/edgeinfer/plugins/sdk"
)

//go:embed sample.conf
var sampleConfig string

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-sample-config" {
		fmt.Print(sampleConfig)
		return
	}
	sdk.Serve(newClassifier())
}
