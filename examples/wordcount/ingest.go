package main

import (
	"errors"
	"path/filepath"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/ingest"
	"github.com/tessera-streams/tessera/flows"
)

// httpSource is -source http: the stream "lines" of an embedded log in
// <data>/ingest, which the node serves at POST /v1/streams/lines/events.
// It returns the log's Close, to call once the node has stopped.
func httpSource(node *cluster.Flags, partitions int) (flows.Source[Line], func() error, error) {
	if node.Data == "" {
		return nil, nil, errors.New("-source http needs -data: a push is acknowledged once its events are durable in the log there")
	}
	l, err := ingest.Open(filepath.Join(node.Data, "ingest"), ingest.Options{})
	if err != nil {
		return nil, nil, err
	}
	s, err := ingest.NewStream(l, ingest.Config[Line]{Name: "lines", Partitions: partitions})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	node.Streams = append(node.Streams, s)
	return s, l.Close, nil
}
