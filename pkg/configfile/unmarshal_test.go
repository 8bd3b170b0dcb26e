package configfile

import (
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// TestUnmarshalJSON reads what mmctl -o json prints: lowercase enum values,
// which protojson alone refuses.
func TestUnmarshalJSON(t *testing.T) {
	var resp metamcpv1.ListDataPlanesResponse
	err := UnmarshalJSON([]byte(`{"dataPlanes":[{"nodeId":"dp-1","upstreams":[{"server":"demo","state":"healthy"}]}],"revision":"7"}`), &resp)
	if err != nil {
		t.Fatal(err)
	}
	if u := resp.GetDataPlanes()[0].GetUpstreams()[0]; u.GetState() != metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY || resp.GetRevision() != 7 {
		t.Errorf("decoded %v", &resp)
	}
	if err := UnmarshalJSON([]byte(`{"dataPlanes":[{"upstreams":[{"state":"sideways"}]}]}`), &resp); err == nil {
		t.Error("an unknown enum value was accepted")
	}
}
