// ESLint over the admin and build scripts (node), the web app's modules (browser) and the
// bench's floor and ceiling Workers (workerd): the recommended rules.
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
  {
    files: ["bench/floor/*.js", "bench/trivial/*.js"],
    languageOptions: { sourceType: "module", globals: globals.serviceworker },
  },
];
