package bench

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/tinymq/tinymq/codec"
)

// MQTT 5 in the load generator: the protocol level every connection of a
// run speaks, and the checks a 5.0 subscriber makes on what it receives.

const (
	// subTopicAliasMax is the Topic Alias Maximum a 5.0 subscriber
	// announces with --topic-alias.
	subTopicAliasMax = 16
	// maxUserProps bounds --user-props (each costs ~25 bytes per PUBLISH).
	maxUserProps = 1000
	// userPropValueLen is the length of each user property's value.
	userPropValueLen = 16
)

// ParseMQTTVersion reads a --mqtt-version value: "3.1.1" (also "" and
// "4", its protocol level) or "5" (also "5.0").
func ParseMQTTVersion(s string) (codec.Version, error) {
	switch strings.TrimSpace(s) {
	case "", "3.1.1", "4":
		return codec.V311, nil
	case "5", "5.0":
		return codec.V5, nil
	}
	return 0, fmt.Errorf("MQTT version %q: want 3.1.1 or 5", s)
}

// ParseMQTTVersions reads a comma-separated list of versions ("3.1.1,5"),
// each once, in their canonical names (VersionName).
func ParseMQTTVersions(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		v, err := ParseMQTTVersion(f)
		if err != nil {
			return nil, err
		}
		name := VersionName(v)
		for _, o := range out {
			if o == name {
				return nil, fmt.Errorf("MQTT version %s given twice", name)
			}
		}
		out = append(out, name)
	}
	return out, nil
}

// VersionName is the name --mqtt-version takes and results carry: "3.1.1"
// or "5".
func VersionName(v codec.Version) string {
	if v == codec.V5 {
		return "5"
	}
	return "3.1.1"
}

// benchUserProps is the list of n user properties every PUBLISH of a run
// carries: key "k<i>", a 16-byte value that names i as well, so that a
// broker that reorders them or swaps values is caught. nil for n = 0.
func benchUserProps(n int) []codec.UserProperty {
	if n <= 0 {
		return nil
	}
	ps := make([]codec.UserProperty, n)
	for i := range ps {
		ps[i].Key = []byte("k" + strconv.Itoa(i))
		ps[i].Value = fmt.Appendf(nil, "value-%0*d", userPropValueLen-6, i)
	}
	return ps
}

// sameUserProps reports whether got is want: same pairs, same order.
func sameUserProps(got, want []codec.UserProperty) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) {
			return false
		}
	}
	return true
}

// reasonHex is a reason (or 3.1.1 return) code as reports write it: "0x87".
func reasonHex(rc codec.ReasonCode) string { return fmt.Sprintf("0x%02x", uint8(rc)) }

// codeWord names a CONNACK's code at protocol level v.
func codeWord(v codec.Version) string {
	if v == codec.V5 {
		return "reason code"
	}
	return "return code"
}

// unexpected describes a packet that came instead of the one awaited; a
// DISCONNECT says its reason code.
func unexpected(v codec.Version, h codec.FixedHeader, body []byte) string {
	if h.Type == codec.TypeDisconnect {
		var d codec.Disconnect
		_ = d.Decode(v, h, body)
		return "the broker sent DISCONNECT " + reasonHex(d.Reason)
	}
	return "unexpected " + h.Type.String()
}
