//go:build !linux

package shmpipe

func create(int) ([]int, error) { return nil, ErrUnsupported }
