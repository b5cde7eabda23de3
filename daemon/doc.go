// Package daemon will hold edgeinferd, the long-running process: config,
// plugin supervisor, model repository watch, routing of frames from sensors
// to pipelines, and MQTT/HTTP output. It is pure Go and never links
// TensorFlow; models run in plugin processes (see plugins/).
//
// Status: not built yet (issue "The daemon end to end").
package daemon
