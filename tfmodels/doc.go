// Package tfmodels is edgeinfer's own thin binding over the TensorFlow C API.
//
// It loads a SavedModel, reads its signatures from the MetaGraphDef (parsed
// with protowire, no generated TensorFlow protobuf packages), and runs a
// signature through a prepared Runner whose operations are resolved once at
// load. Tensors own C memory allocated by TensorFlow (64-byte aligned, so
// TF_SessionRun uses it without a copy) and are freed explicitly with Close;
// a finalizer exists only as a safety net for tensors a caller forgot.
//
// Every failure is an *Error wrapping one of the Err* kinds, carrying the
// model directory, the signature and tensor involved, and TensorFlow's own
// status message, so callers can both print it and test it with errors.Is.
//
// A Model is safe for concurrent use: any number of goroutines may call Run
// on one Runner (or several) at once; Close waits for runs in flight.
//
// cgo finds TensorFlow through pkg-config (`tensorflow.pc`); `make deps`
// writes one for the tensorflow-cpu wheel in the project's venv. Only the
// plugin processes import this package; the daemon does not link TensorFlow.
package tfmodels
