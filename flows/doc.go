// Package flows is the user API.
package flows
