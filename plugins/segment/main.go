// Command edgeinfer-segment is edgeinfer's semantic segmentation plugin:
// multi-class logits [1, H, W, N] become a per-pixel class map at the
// frame's size, single-channel foreground masks [1, H, W, 1] a thresholded
// mask; each class found is published with its share of the frame, its box,
// its connected components and its mask as COCO RLE (README.md).
package main

import "github.com/edgeinfer/edgeinfer/plugins/sdk"

func main() { sdk.Serve(newSegmenter()) }
