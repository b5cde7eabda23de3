package graphcheck

// group is a set of denied ops that share a reason.
type group struct {
	why string // completes "op X (...) <why>: denied"
	ops []string
}

// groups is the deny-list, curated from TensorFlow's op registry (the ops
// whose names hold File, Reader, Writer, Dataset, Summary, Save, Restore,
// Py, Debug, Print, Rpc, ...; see README.md) down to those that reach
// outside the process: the file system, the network, Python, the terminal.
// TensorFlow registers no op that opens a raw socket or runs a process;
// the network is reached through its RPC and data-service ops.
var groups = []group{
	{"reads files", []string{
		"ReadFile", "MatchingFiles", "ImmutableConst", "FileSystemSetConfiguration",
		"InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
		"LoadAndRemapMatrix", "GenerateVocabRemapping", "RecordInput",
	}},
	{"reads a protobuf descriptor file (descriptor_source)", []string{
		"DecodeProtoV2", "EncodeProto",
	}},
	{"writes files", []string{
		"WriteFile", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
		"SaveDataset", "SaveDatasetV2", "DistributedSave", "CalibrationStatisticsSaver",
	}},
	{"is a queue-based file reader", []string{
		"WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
		"TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
		"LMDBReader", "IdentityReader", "IdentityReaderV2",
		"ReaderRead", "ReaderReadV2", "ReaderReadUpTo", "ReaderReadUpToV2",
		"ReaderRestoreState", "ReaderRestoreStateV2",
	}},
	{"is a dataset that reads files or a database", []string{
		"TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
		"FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
		"CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
		"LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset",
		"MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "LoadDataset",
		"CacheDataset", "CacheDatasetV2",
		"SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
		"SnapshotChunkDataset", "ListSnapshotChunksDataset",
	}},
	{"writes summaries (event files or a database)", []string{
		"SummaryWriter", "CreateSummaryFileWriter", "CreateSummaryDbWriter",
		"WriteSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
		"WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
		"FlushSummaryWriter", "CloseSummaryWriter", "StatsAggregatorSetSummaryWriter",
	}},
	{"talks over the network", []string{
		"RpcServer", "RpcServerRegister", "RpcServerStart", "RpcClient", "RpcCall",
		"DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
		"RegisterDataset", "RegisterDatasetV2",
	}},
	{"runs Python", []string{
		"PyFunc", "PyFuncStateless", "EagerPyFunc",
	}},
	{"is a debugger op (writes to debug_urls: files or gRPC)", []string{
		"DebugIdentity", "DebugIdentityV2", "DebugIdentityV3",
		"DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
	}},
	{"prints (to stderr, or to a file through output_stream)", []string{
		"Print", "PrintV2",
	}},
}

// saverWhy is the reason of saverOps: they are denied everywhere but in
// the saver's own subgraph (see Check).
const saverWhy = "reads or writes checkpoints outside the saver"

// saverOps restore and save the variables. TensorFlow runs the saver's
// restore op when it loads a SavedModel, so they are allowed in what the
// SaverDef's restore_op_name and save_tensor_name reach, and denied
// anywhere else. The string ops that build the checkpoint's file names
// (ShardedFilename, StringJoin) touch nothing and are allowed anywhere.
var saverOps = []string{
	"Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2",
	"MergeV2Checkpoints", "DTensorRestoreV2",
}

// denied maps each denied op to why.
var denied = func() map[string]string {
	m := map[string]string{}
	for _, g := range groups {
		for _, op := range g.ops {
			m[op] = g.why
		}
	}
	for _, op := range saverOps {
		m[op] = saverWhy
	}
	return m
}()

// Denied reports whether the deny-list holds op, and why it is denied (the
// saver's ops are allowed in the saver all the same). It is what an
// allow_ops entry is checked against: allowing an op the list does not
// hold is a mistake.
func Denied(op string) (why string, ok bool) {
	why, ok = denied[op]
	return why, ok
}

func isSaverOp(op string) bool { return denied[op] == saverWhy }
