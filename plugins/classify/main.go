// Command edgeinfer-classify is edgeinfer's image classification plugin: the
// daemon starts it, hands it a classify model version and sends it frames;
// it answers each frame with the model's top labels (see README.md).
package main

import "github.com/edgeinfer/edgeinfer/plugins/sdk"

func main() { sdk.Serve(newClassifier()) }
