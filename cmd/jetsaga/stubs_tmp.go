package main

import "github.com/spf13/cobra"

func (a *app) demoCmd() *cobra.Command { return &cobra.Command{Use: "demo"} }
func (a *app) devCmd() *cobra.Command  { return &cobra.Command{Use: "dev"} }
func (a *app) bankCmd() *cobra.Command { return &cobra.Command{Use: "bank"} }
func (a *app) migrateCmd() *cobra.Command { return &cobra.Command{Use: "migrate"} }
