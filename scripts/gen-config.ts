// `npm run config:docs`: writes .env.example and docs/configuration.md from the settings table
// (src/config/settings.ts), so that what operators read is what the daemon validates. Node 24 runs it
// as TypeScript; the table imports nothing of the project, so no build is needed. A unit test
// (test/unit/config-reference.test.ts) fails when the committed files differ from what this writes.
import { writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { z } from "zod";
import {
  bool,
  ENV_EXAMPLE_INTRO,
  globList,
  GROUPS,
  identifier,
  REFERENCE_INTRO,
  SETTINGS,
  TOOLING_NAMES,
  TOOLING_PREFIXES,
  topicName,
} from "../src/config/settings.ts";
import type { GroupId, Setting } from "../src/config/settings.ts";

const SOURCE = "src/config/settings.ts";
const WIDTH = 100;

interface Entry extends Setting {
  name: string;
}

/** The settings of each group, groups in GROUPS' order, settings in the table's order. */
function byGroup(): { id: GroupId; entries: Entry[] }[] {
  const entries: Entry[] = Object.entries(SETTINGS).map(([name, s]) => ({ name, ...s }));
  return (Object.keys(GROUPS) as GroupId[]).map((id) => ({ id, entries: entries.filter((e) => e.group === id) }));
}

/** The default as it would be written in the environment; undefined when the setting has none. */
export function defaultOf(schema: z.ZodType): string | undefined {
  return schema instanceof z.ZodDefault ? String(schema.def.defaultValue) : undefined;
}

/** What the setting accepts, in words, read from its schema so it cannot disagree with the validation. */
export function valuesOf(schema: z.ZodType): string {
  const inner = schema instanceof z.ZodDefault || schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : schema;
  if (inner === bool) return "`true` or `false` (also `1`/`0`, `yes`/`no`)";
  if (inner === identifier) return "lower-case PostgreSQL identifier";
  if (inner === topicName) return "Kafka topic name";
  if (inner === globList) return "globs, comma-separated (`*`, `?`)";
  if (inner instanceof z.ZodEnum) return inner.options.map((o) => `\`${String(o)}\``).join(", ");
  if (inner instanceof z.ZodNumber) return `whole number, ${String(inner.minValue)} to ${String(inner.maxValue)}`;
  return "text";
}

/** Words of `text` on lines of at most WIDTH characters, each starting with `prefix`. */
function wrap(text: string, prefix: string): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line !== "" && prefix.length + line.length + 1 + word.length > WIDTH) {
      lines.push(prefix + line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(prefix + line);
  return lines;
}

const plain = (markdown: string) => markdown.replaceAll("`", "");

export function envExample(): string {
  const out = [
    ...wrap(ENV_EXAMPLE_INTRO, "# "),
    `# Generated from ${SOURCE} by \`npm run config:docs\`: edit the table there, not this file.`,
  ];
  for (const { id, entries } of byGroup()) {
    const group = GROUPS[id];
    out.push("", `# --- ${group.title} ---`);
    if (group.about !== "") out.push(...wrap(plain(group.about), "# "));
    for (const e of entries) out.push("", ...wrap(plain(e.about), "# "), `${e.name}=${defaultOf(e.schema) ?? ""}`);
  }
  return `${out.join("\n")}\n`;
}

const cell = (text: string) => text.replaceAll("|", "\\|");

export function configurationReference(): string {
  const tooling = [...TOOLING_PREFIXES.map((p) => `\`${p}*\``), ...TOOLING_NAMES.map((n) => `\`${n}\``)];
  const out = [
    "# Configuration",
    "",
    `<!-- Generated from ${SOURCE} by \`npm run config:docs\`: edit the table there, not this file. -->`,
    "",
    ...wrap(REFERENCE_INTRO[0], ""),
    "",
    ...wrap(`${REFERENCE_INTRO[1]} ${tooling.join(", ")} (the daemon ignores them; \`TOOLING_NAMES\` in \`${SOURCE}\`).`, ""),
  ];
  for (const { id, entries } of byGroup()) {
    const group = GROUPS[id];
    out.push("", `## ${group.title}`, "");
    if (group.about !== "") out.push(...wrap(group.about, ""), "");
    out.push("| variable | default | accepts | meaning |", "| --- | --- | --- | --- |");
    for (const e of entries) {
      const d = defaultOf(e.schema);
      const shown = d === undefined ? "unset" : d === "" ? "empty" : `\`${d}\``;
      out.push(`| \`${e.name}\` | ${cell(shown)} | ${cell(valuesOf(e.schema))} | ${cell(e.about)} |`);
    }
  }
  return `${out.join("\n")}\n`;
}

/** The generated files, by path from the repository's root. */
export function generatedFiles(): Record<string, string> {
  return { ".env.example": envExample(), "docs/configuration.md": configurationReference() };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const root = fileURLToPath(new URL("..", import.meta.url));
  for (const [path, text] of Object.entries(generatedFiles())) {
    writeFileSync(`${root}${path}`, text);
    process.stdout.write(`wrote ${path}\n`);
  }
}
