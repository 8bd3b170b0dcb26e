package migration

import (
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		files    fstest.MapFS
		want     []int
		wantFail bool
	}{
		{
			name: "sorted by version",
			files: fstest.MapFS{
				"m/0010_b.sql":  {Data: []byte("B")},
				"m/0002_a.sql":  {Data: []byte("A")},
				"m/README.md":   {Data: []byte("ignored")},
				"m/0001_x.sql":  {Data: []byte("X")},
				"m/other/1.txt": {Data: []byte("ignored")},
			},
			want: []int{1, 2, 10},
		},
		{name: "duplicate version", files: fstest.MapFS{"m/0001_a.sql": {}, "m/1_b.sql": {}}, wantFail: true},
		{name: "no version", files: fstest.MapFS{"m/init.sql": {}}, wantFail: true},
		{name: "zero version", files: fstest.MapFS{"m/0000_init.sql": {}}, wantFail: true},
		{name: "missing dir", files: fstest.MapFS{}, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(tt.files, "m")
			if tt.wantFail {
				if err == nil {
					t.Fatalf("Load succeeded with %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d migrations, want %d", len(got), len(tt.want))
			}
			for i, m := range got {
				if m.Version != tt.want[i] {
					t.Errorf("migration %d version %d, want %d", i, m.Version, tt.want[i])
				}
			}
		})
	}
}
