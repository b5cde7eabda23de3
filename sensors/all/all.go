// Package all registers every sensor kind: import it for its side effect,
//
//	import _ "github.com/edgeinfer/edgeinfer/sensors/all"
//
// and sensors.Lookup finds dir, ffmpeg, file, mqtt and synthetic.
package all

import (
	_ "github.com/edgeinfer/edgeinfer/sensors/dir"       // a folder of images, lossless
	_ "github.com/edgeinfer/edgeinfer/sensors/ffmpeg"    // RTSP/HTTP streams, V4L2 cameras, videos
	_ "github.com/edgeinfer/edgeinfer/sensors/file"      // one image or video, once or looped
	_ "github.com/edgeinfer/edgeinfer/sensors/mqtt"      // images published on an MQTT topic
	_ "github.com/edgeinfer/edgeinfer/sensors/synthetic" // generated frames, live
)
