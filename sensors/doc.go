// Package sensors will hold the frame sources, one folder per kind (dir,
// file, ffmpeg, mqtt, synthetic), each producing RGB frames for pipelines.
//
// Status: not built yet (issue "The daemon end to end").
package sensors
