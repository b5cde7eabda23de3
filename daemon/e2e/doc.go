// Package e2e holds edgeinferd's end-to-end tests: the real daemon binary,
// real plugin processes running TensorFlow, a real Mosquitto broker (or the
// embedded one), real ffmpeg. It has no code of its own outside its tests.
package e2e
