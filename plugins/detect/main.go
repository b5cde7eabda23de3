// Command edgeinfer-detect is edgeinfer's object detection plugin: YOLOv3
// grids, the TensorFlow Object Detection API's boxes and masks (Faster and
// Mask R-CNN), one tensor of decoded rows (CenterNet-style), and anchor-free
// heads. Boxes and masks are published in source-frame pixels (README.md).
package main

import "github.com/edgeinfer/edgeinfer/plugins/sdk"

func main() { sdk.Serve(newDetector()) }
