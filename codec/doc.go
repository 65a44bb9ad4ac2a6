// Package codec is the MQTT 3.1, 3.1.1 and 5.0 wire format.
//
// It performs no I/O and holds no state between calls: no goroutines, no
// locks, no clock, standard library only. Framing (ReadFrame) tells "need
// more", "complete frame of n bytes" and "malformed" apart and checks the
// maximum packet size from the fixed header alone. Decoders fill a
// caller-owned destination with sub-slices of the input (decode in place:
// no copies, no allocations once the destination's slices have grown);
// encoders append to a caller's slice. Peer errors are *Error values
// carrying the reason code to answer with. See docs/codec.md.
package codec
