import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".services/**", "coverage/**", "bench/results/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "no-console": "error",
      eqeqeq: ["error", "always"],
    },
  },
  {
    // The live page (docs/serve-page.md) runs in the browser as written: the browser globals it uses.
    files: ["src/serve/page/**/*.js"],
    languageOptions: {
      globals: Object.fromEntries(
        [
          "document",
          "window",
          "location",
          "fetch",
          "EventSource",
          "requestAnimationFrame",
          "performance",
          "setTimeout",
          "setInterval",
          "CSS",
          "URLSearchParams",
        ].map((g) => [g, "readonly"]),
      ),
    },
  },
  {
    files: ["test/**", "bench/**", "scripts/**", "examples/**"],
    rules: { "no-console": "off" },
  },
);
