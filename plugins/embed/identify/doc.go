// Package identify is the identity logic of the embed plugin: the model
// (FaceNet, a Siamese tower) turns a crop into an embedding, and this
// package says whose it is, or, for a stranger, which of the strangers
// seen so far.
//
// It is pure Go and knows nothing of TensorFlow: the plugin hands it
// embeddings, and an Embedder for the images it must embed itself (the
// gallery folder, enrolment commands, stored exemplars after a model
// change).
//
//   - LoadGallery enrols a folder of images, one folder per identity,
//     with optional negative examples and per-identity thresholds
//     (gallery.toml). WatchGallery tells the plugin when to load it again.
//   - Identifier matches an embedding against the gallery and the
//     identities enrolled at runtime, and groups the embeddings that match
//     no one into clusters (Clustering) with stable ids.
//   - The clusters and the runtime identities are kept in a state
//     directory that survives restarts and model changes.
//   - Commands (enrol, name_cluster, forget) arrive as JSON; DecodeCommand
//     checks them and Identifier.Apply runs them.
//
// Every distance is the Euclidean distance between L2-normalised vectors,
// in [0, 2], computed in float64.
package identify
