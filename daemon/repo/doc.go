// Package repo reads and watches the model repository, laid out as
// TensorFlow Serving's:
//
//	<repository>/<model>/<version>/saved_model.pb
//	<repository>/<model>/<version>/variables/variables.index
//	<repository>/<model>/<version>/variables/variables.data-00000-of-00001
//	<repository>/<model>/<version>/edgeinfer.toml
//	<repository>/<model>/<version>/golden/...
//
// Version folders are named by a non-negative decimal integer; any other name
// (and any dot-name such as ".3.tmp") is ignored. It tells which versions are
// there and whether each can be served; which version to serve, and loading
// it, is the daemon's lifecycle's job.
//
// # Completeness
//
// Scan and Servable check each version deeply, in pure Go: saved_model.pb is
// a whole SavedModel message, edgeinfer.toml reads and validates, and the
// variables are a whole TensorFlow tensor bundle: variables.index is read as
// the SSTable it is (footer, magic number, block checksums, every entry), and
// every data shard it names holds at least the bytes the index places in it.
// A version that fails says why in Version.Err, naming the file:
//
//	/models/lenet5/2/variables/variables.data-00000-of-00001: 1200 bytes, the index needs 4096 (still being copied?)
//
// Version.Fingerprint hashes the path, size and modification time of every
// file of the version, so a version rejected for any reason (a failed check
// here, a failed load or golden validation in the daemon) is tried again only
// once its files change.
//
// # Deploying a version
//
// The atomic way is to copy the version under a dot-name inside the model
// folder, on the same file system, then rename it into place:
//
//	cp -r lenet5-v3/ models/lenet5/.3.tmp
//	mv models/lenet5/.3.tmp models/lenet5/3
//
// The rename is atomic: the watcher never sees a partial version.
//
// Copying straight into models/lenet5/3 is safe too, only slower to be
// picked up: a Watcher reports a version only once its fingerprint has not
// changed for WatchOptions.Settle, and even a copy that pauses for longer
// than that (a big data shard written in chunks over a slow link) is
// reported with Err != nil until every file the index needs is whole,
// because the index says how long each data shard must be and the index is
// checked to be whole itself. Golden files are not part of this check; the
// daemon's validation rejects a version whose golden files are cut short,
// and retries it when they change.
//
// # Watching
//
// A Watcher follows a set of models (SetModels, changed on a config reload)
// with fsnotify and a periodic rescan, and delivers on Updates the settled
// versions of a model, servable or not, whenever they change. At start-up,
// versions whose files were all last modified more than Settle ago count as
// settled at once, so a daemon started on an existing repository does not
// wait.
package repo
