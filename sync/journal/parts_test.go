package journal

import "testing"

func TestPartHashesRoundTrip(t *testing.T) {
	r := Record{Size: 3 << 20, MtimeNs: 5, Inode: 9, ETag: "abc-2", PartSize: 2 << 20, PartMD5: [][16]byte{{1, 2}, {3, 4}}}
	got, err := unmarshal(r.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.PartSize != r.PartSize || len(got.PartMD5) != 2 || got.PartMD5[1] != r.PartMD5[1] || got.ETag != r.ETag {
		t.Fatalf("round trip: %+v", got)
	}
	// A row written before part hashes existed still reads, without them.
	old := Record{Size: 1, ETag: "x"}.marshal()
	if got, err := unmarshal(old); err != nil || got.PartSize != 0 || got.PartMD5 != nil {
		t.Fatalf("old row: %+v %v", got, err)
	}
	// A truncated tail is corrupt, not half read.
	b := r.marshal()
	if _, err := unmarshal(b[:len(b)-3]); err == nil {
		t.Fatal("truncated part hashes accepted")
	}
}
