package jobgate_test

import (
	"encoding/json"

	"github.com/google/go-github/v62/github"
)

func githubPermissions(runners string) github.InstallationPermissions {
	return github.InstallationPermissions{OrganizationSelfHostedRunners: &runners}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
