package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgeinfer/edgeinfer/plugins/sdk/taskpb"
)

// Serve runs t as a plugin process; a task plugin's main calls it and
// nothing else. It returns when the daemon ends the plugin. If t is an
// io.Closer it is closed then.
func Serve(t Task) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{pluginName: &grpcPlugin{impl: t}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage))...)
		},
	})
	if c, ok := t.(io.Closer); ok {
		c.Close()
	}
}

// grpcPlugin adapts Task to go-plugin: the server side registers the gRPC
// service, the client side returns a *client.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Task
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	taskpb.RegisterTaskServer(s, &server{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return taskpb.NewTaskClient(c), nil
}

// server turns gRPC calls into Task calls, one at a time.
type server struct {
	taskpb.UnimplementedTaskServer
	impl Task
	mu   sync.Mutex
	shm  shmReader
}

func (s *server) Load(ctx context.Context, req *taskpb.LoadRequest) (*taskpb.LoadResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := s.impl.Load(ctx, LoadRequest{
		Model: req.Model, Version: req.Version, ModelDir: req.ModelDir,
		Threads: int(req.Threads), Tolerance: req.Tolerance,
	})
	if err != nil {
		return nil, refused(err)
	}
	return &taskpb.LoadResponse{
		Task: info.Task, Signature: info.Signature, InputShape: info.InputShape,
		Labels: int32(info.Labels), WarmupNs: int64(info.Warmup), Description: info.Description,
	}, nil
}

func (s *server) Configure(ctx context.Context, req *taskpb.ConfigureRequest) (*taskpb.ConfigureResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pipelines := make(map[string]json.RawMessage, len(req.Pipelines))
	for name, opts := range req.Pipelines {
		pipelines[name] = opts
	}
	if err := s.impl.Configure(ctx, pipelines); err != nil {
		return nil, refused(err)
	}
	return &taskpb.ConfigureResponse{}, nil
}

func (s *server) Validate(ctx context.Context, _ *taskpb.ValidateRequest) (*taskpb.ValidateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.impl.Validate(ctx)
	if err != nil {
		return nil, refused(err)
	}
	return &taskpb.ValidateResponse{Samples: int32(v.Samples), MaxAbsDiff: v.MaxAbsDiff, Tolerance: v.Tolerance}, nil
}

// Command hands a command to a task that takes them (Commander).
func (s *server) Command(ctx context.Context, req *taskpb.CommandRequest) (*taskpb.CommandResponse, error) {
	c, ok := s.impl.(Commander)
	if !ok {
		return nil, status.Error(codes.Unimplemented, ErrNoCommands.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	msg, err := c.Command(ctx, req.Pipeline, req.CommandJson)
	if err != nil {
		return nil, refused(err)
	}
	return &taskpb.CommandResponse{Message: msg}, nil
}

// refused is the task's own error as the client tells it from a transport
// error: FailedPrecondition with the task's message.
func refused(err error) error {
	return status.Error(codes.FailedPrecondition, err.Error())
}

// Infer serves the daemon's stream of frames, one at a time.
func (s *server) Infer(stream grpc.BidiStreamingServer[taskpb.InferRequest, taskpb.InferResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(s.infer(stream.Context(), req)); err != nil {
			return err
		}
	}
}

// infer runs one frame; the task's error goes into the response.
func (s *server) infer(ctx context.Context, req *taskpb.InferRequest) *taskpb.InferResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := Frame{
		Pipeline: req.Pipeline, Seq: req.Seq, Width: int(req.Width), Height: int(req.Height),
		Sensor: req.Sensor, Source: req.Source,
	}
	if req.TimeUnixNano != 0 {
		f.Time = time.Unix(0, req.TimeUnixNano)
	}
	switch px := req.Pixels.(type) {
	case *taskpb.InferRequest_Shared:
		rgb, err := s.shm.view(px.Shared.Path, px.Shared.Size, px.Shared.Length)
		if err != nil {
			return &taskpb.InferResponse{Error: err.Error()}
		}
		f.RGB = rgb
	case *taskpb.InferRequest_Rgb:
		f.RGB = px.Rgb
	}
	res, err := s.impl.Infer(ctx, f)
	if err != nil {
		return &taskpb.InferResponse{Error: err.Error(), BadFrame: errors.Is(err, ErrBadFrame)}
	}
	return &taskpb.InferResponse{
		OutputJson:    res.Output,
		Images:        res.Images,
		PreprocessNs:  int64(res.Timings.Preprocess),
		InferenceNs:   int64(res.Timings.Inference),
		PostprocessNs: int64(res.Timings.Postprocess),
	}
}
