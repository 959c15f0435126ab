// Command etcdnode runs one member of an etcd cluster (etcd's embed
// package), for the multi-host test: each member runs in a network
// namespace of its own, so the test can cut its link.
//
//	etcdnode --name e1 --dir DIR --client 10.77.0.11:2379 --peer 10.77.0.11:2380 \
//	  --initial-cluster e1=http://10.77.0.11:2380,e2=http://10.77.0.12:2380,e3=http://10.77.0.13:2380
//
// It serves until SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdnode:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", "", "member name (required)")
	dir := flag.String("dir", "", "data directory (required)")
	client := flag.String("client", "", "host:port for clients (required)")
	peer := flag.String("peer", "", "host:port for peers (required)")
	cluster := flag.String("initial-cluster", "", "name=http://host:port,… of every member (required)")
	flag.Parse()
	if *name == "" || *dir == "" || *client == "" || *peer == "" || *cluster == "" {
		return errors.New("--name, --dir, --client, --peer and --initial-cluster are required")
	}
	cu, pu := url.URL{Scheme: "http", Host: *client}, url.URL{Scheme: "http", Host: *peer}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = *name, *dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster, cfg.InitialClusterToken, cfg.ClusterState = *cluster, "griddle-multihost", embed.ClusterStateFlagNew
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // a test cluster: speed over durability
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("etcdnode: ready", *name)
	case err := <-e.Err():
		return err
	case <-ctx.Done():
		return nil
	case <-time.After(time.Minute):
		return errors.New("not ready after a minute (are the other members up?)")
	}
	select {
	case err := <-e.Err():
		return err
	case <-ctx.Done():
		return nil
	}
}
