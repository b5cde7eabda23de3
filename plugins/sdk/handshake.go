package sdk

import (
	"github.com/hashicorp/go-plugin"
)

// ProtocolVersion is the version of proto/task.proto (3: one process serves
// several pipelines: Configure, Validate, Frame.Pipeline). A daemon and a plugin
// built with different versions refuse each other at the handshake.
const ProtocolVersion = 3

// Handshake is shared by the daemon and every plugin. The cookie only stops a
// plugin binary from being run by hand by mistake; it is not security.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "EDGEINFER_PLUGIN",
	MagicCookieValue: "task",
}

// pluginName is the one plugin each binary serves.
const pluginName = "task"

// maxMessage bounds one gRPC message: pixels normally travel through shared
// memory, but CopyPixels sends them inline.
const maxMessage = 256 << 20
