package wire

import "strings"

// DeliveryScheme marks the envelope of an event delivery: the sidecar sends
// each event to its handler with the path DeliveryScheme + ":" + the
// subscription's path ("griddle-event:/feed/events"). No client request
// can produce such a path: the envelopes the edge and the sidecars build
// from HTTP requests take the escaped path of a parsed request target,
// which starts with "/" (or is "*"). The SDK serves a delivery at the
// subscription's path and tells it from a request; a request from
// anyone else to that path never looks like a delivery.
const DeliveryScheme = "griddle-event"

// DeliveryPath is the envelope path of a delivery to path.
func DeliveryPath(path string) string { return DeliveryScheme + ":" + path }

// IsDelivery reports whether an envelope path is a delivery's.
func IsDelivery(envelopePath string) bool {
	return strings.HasPrefix(envelopePath, DeliveryScheme+":")
}
