package engine

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConformanceDoc fails when a spec id tagged in the code is missing from
// docs/conformance.md (regenerate it with python3 docs/conformance.py).
func TestConformanceDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/conformance.md")
	if err != nil {
		t.Fatal(err)
	}
	tag := regexp.MustCompile(`MQTT5?-\d+(?:\.\d+)*-\d+`)
	listed := map[string]bool{}
	for _, id := range tag.FindAllString(string(doc), -1) {
		listed[id] = true
	}
	var missing []string
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, id := range tag.FindAllString(string(src), -1) {
			if !listed[id] {
				missing = append(missing, id+" ("+path+")")
				listed[id] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("docs/conformance.md is stale; missing %v (run python3 docs/conformance.py > docs/conformance.md)", missing)
	}
}
