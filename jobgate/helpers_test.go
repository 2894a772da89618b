package jobgate_test

import "github.com/google/go-github/v62/github"

func githubPermissions(runners string) github.InstallationPermissions {
	return github.InstallationPermissions{OrganizationSelfHostedRunners: &runners}
}
