package shmpipe

// Socketpair is socketpair, for the tests.
var Socketpair = socketpair
