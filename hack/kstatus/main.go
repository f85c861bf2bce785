// Command kstatus reads Kubernetes objects as JSON from stdin (an array of objects, or one
// object) and prints, for each in order, what kstatus computes for it:
//
//	[{"name": "...", "namespace": "...", "status": "Current", "message": "..."}]
//
// status is one of kstatus's statuses: InProgress, Failed, Current, Terminating, NotFound,
// Unknown. Bad input (not JSON, not objects, no apiVersion/kind, or an error from kstatus)
// exits 2 with one line on stderr and nothing on stdout.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func fail(format string, args ...any) {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	fmt.Fprintln(os.Stderr, "kstatus: "+msg)
	os.Exit(2)
}

func decode(data []byte) ([]map[string]any, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("no input: want a JSON object or an array of objects")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber() // keep int64 generations exact, as unstructured expects
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("input is not JSON: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	switch t := v.(type) {
	case map[string]any:
		return []map[string]any{t}, nil
	case []any:
		objs := make([]map[string]any, 0, len(t))
		for i, item := range t {
			m, ok := item.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("item %d is not a JSON object", i)
			}
			objs = append(objs, m)
		}
		return objs, nil
	default:
		return nil, fmt.Errorf("want a JSON object or an array of objects, got %T", v)
	}
}

// normalize turns json.Number into int64 or float64, the number types unstructured uses.
func normalize(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			t[k] = n
		}
		return t, nil
	case []any:
		for i, e := range t {
			n, err := normalize(e)
			if err != nil {
				return nil, err
			}
			t[i] = n
		}
		return t, nil
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		f, err := t.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s: %v", t, err)
		}
		return f, nil
	default:
		return v, nil
	}
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	objs, err := decode(data)
	if err != nil {
		fail("%v", err)
	}
	results := make([]result, 0, len(objs))
	for i, obj := range objs {
		if _, err := normalize(obj); err != nil {
			fail("object %d: %v", i, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			fail("object %d: no apiVersion or kind", i)
		}
		res, err := status.Compute(u)
		if err != nil {
			fail("object %d (%s %s/%s): %v", i, u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		results = append(results, result{
			Name:      u.GetName(),
			Namespace: u.GetNamespace(),
			Status:    res.Status.String(),
			Message:   res.Message,
		})
	}
	out, err := json.Marshal(results)
	if err != nil {
		fail("encoding the result: %v", err)
	}
	fmt.Println(string(out))
}
