package topic

import "testing"

// TestValidateControlChars [MQTT-1.5.3-1] [MQTT-4.7.3-2]: topic names and
// filters reject what codec.CheckUTF8 rejects (the HTTP door and the
// configuration validate through here, not through the codec): control
// characters U+0001..U+001F and U+007F..U+009F, non-characters, ill-formed
// UTF-8.
func TestValidateControlChars(t *testing.T) {
	for _, c := range []struct {
		s    string
		want error
	}{
		{"a\x01", ErrControlChar},
		{"a\t/b", ErrControlChar},
		{"a\x1f", ErrControlChar},
		{"a\x7f", ErrControlChar},
		{"\xc2\x80/a", ErrControlChar},
		{"\xc2\x9f/a", ErrControlChar},
		{"a/\xef\xb7\x90", ErrNonCharacter},
		{"a/\xef\xbf\xbe", ErrNonCharacter},
		{"a/\xf4\x8f\xbf\xbf", ErrNonCharacter},
		{"a/\xed\xa0\x80", ErrBadUTF8},
		{"a/\xc2\xa0", nil},
		{"a/\xef\xbf\xbd", nil},
		{"a/ ~", nil},
	} {
		if got := ValidateName([]byte(c.s), Limits{}); got != c.want {
			t.Errorf("ValidateName(%q) = %v; want %v", c.s, got, c.want)
		}
		if got := ValidateFilter([]byte(c.s+"/#"), Limits{}); got != c.want {
			t.Errorf("ValidateFilter(%q) = %v; want %v", c.s+"/#", got, c.want)
		}
	}
}
