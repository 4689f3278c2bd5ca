// ESLint over the admin and build scripts (node) and the web app's modules (browser): the
// recommended rules.
const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  js.configs.recommended,
  {
    files: ["scripts/*.mjs"],
    languageOptions: { globals: globals.node },
  },
  {
    files: ["web/public/-/**/*.js"],
    languageOptions: { sourceType: "module", globals: globals.browser },
  },
];
