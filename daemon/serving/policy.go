package serving

import (
	"fmt"
	"strconv"

	"github.com/edgeinfer/edgeinfer/daemon/repo"
)

// Version policies ([serving.<model>] version).
const (
	Latest = "latest"
)

// Memory policies ([serving.<model>] policy).
const (
	// Availability loads the new version before the old one stops, so
	// frames never wait for a load (two processes for a while).
	Availability = "availability"
	// Resource stops the old version first, for devices that cannot hold
	// two copies: lossless frames wait, live frames are skipped.
	Resource = "resource"
)

// versionKey names one version's files exactly: its number and its
// fingerprint, so that a rejected version is tried again once its files
// change.
func versionKey(v repo.Version) string { return v.Version + "#" + v.Fingerprint }

// choose is the version policy, pure: the version that should serve among
// versions (highest first, as repo.Scan lists them), given the wanted
// version ("latest" or a number) and the versions already rejected. ok is
// false when none fits; why then says so, for the model state.
func choose(versions []repo.Version, want string, rejected map[string]string) (v repo.Version, ok bool, why string) {
	if want != Latest {
		for _, v := range versions {
			if v.Version != want {
				continue
			}
			if v.Err != nil {
				return v, false, fmt.Sprintf("pinned version %s cannot be served: %v", want, v.Err)
			}
			if r, bad := rejected[versionKey(v)]; bad {
				return v, false, fmt.Sprintf("pinned version %s was rejected: %s", want, r)
			}
			return v, true, ""
		}
		return repo.Version{}, false, fmt.Sprintf("pinned version %s is not in the repository", want)
	}
	why = "no version in the repository (a version is taken once its files have not changed for models.settle)"
	for _, v := range versions {
		if v.Err != nil {
			why = fmt.Sprintf("version %s cannot be served: %v", v.Version, v.Err)
			continue
		}
		if r, bad := rejected[versionKey(v)]; bad {
			why = fmt.Sprintf("version %s was rejected: %s", v.Version, r)
			continue
		}
		return v, true, ""
	}
	return repo.Version{}, false, why
}

// below returns the highest servable, not rejected version under num: what
// a rollback goes to.
func below(versions []repo.Version, num string, rejected map[string]string) (repo.Version, bool) {
	n, err := strconv.Atoi(num)
	if err != nil {
		return repo.Version{}, false
	}
	for _, v := range versions {
		if _, bad := rejected[versionKey(v)]; v.Num < n && v.Err == nil && !bad {
			return v, true
		}
	}
	return repo.Version{}, false
}
