// Command kafkabroker runs kfake, franz-go's Kafka broker in memory, for
// tests that run examples as processes (exampletest.KafkaBroker starts
// it): in a process of its own it outlives the examples a test kills, and
// the test binary's race detector does not multiply the CPU of every
// record it stores. It prints "kafkabroker ready on ADDR" to stderr once
// it serves, and stops on SIGINT or SIGTERM. It is for tests only: it
// keeps everything in memory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kafkabroker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kafkabroker", flag.ContinueOnError)
	port := fs.Int("port", 0, "port on 127.0.0.1 (0: any free one)")
	var topics []kfake.Opt
	fs.Func("topic", "NAME:PARTITIONS: a topic to create (repeatable)", func(v string) error {
		name, parts, ok := strings.Cut(v, ":")
		n, err := strconv.ParseInt(parts, 10, 32)
		if !ok || name == "" || err != nil || n < 1 {
			return fmt.Errorf("want NAME:PARTITIONS, got %q", v)
		}
		topics = append(topics, kfake.SeedTopics(int32(n), name))
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(*port)}, topics...)...)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(os.Stderr, "kafkabroker ready on %s\n", strings.Join(c.ListenAddrs(), ","))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
