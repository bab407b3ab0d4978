package metadata

import "encoding/json"

// newYandex returns the Yandex Cloud provider: GCE's computeMetadata API,
// with instance attributes only (Yandex has no project attributes), and
// long polls on instance/, the directory Yandex documents (FACTS.md §1.2).
// A VM whose gce-http-endpoint is off answers 400; that is ErrNoMetadata,
// logged at Warn.
func newYandex(o Options) *compute {
	return &compute{
		c:          newClient(Yandex, o),
		project:    false,
		watchPath:  "instance/",
		attributes: yandexAttributes,
	}
}

// yandexAttributes reads the attributes out of the recursive JSON of
// instance/.
func yandexAttributes(body []byte) (map[string]string, map[string]string, error) {
	var doc struct {
		Attributes map[string]json.RawMessage `json:"attributes"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, err
	}
	return stringValues(doc.Attributes), nil, nil
}
