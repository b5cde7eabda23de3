// Package plugins will hold the plugin protocol shared by every task plugin
// (one handshake, one .proto, client/server adapters) and one folder per
// task plugin binary (classify, detect, segment, embed, video). Plugins are
// the only processes that link TensorFlow, through tfmodels.
//
// Status: not built yet (issue "The daemon end to end").
package plugins
