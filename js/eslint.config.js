// ESLint (flat config) for the front ends. Besides the recommended rules, the HTML sinks are
// forbidden: a token string from a tokenizer is data and reaches the page only as text
// (`textContent`, `setAttribute` with fixed names, canvas `fillText`). tests/test_widgets.py checks
// that these rules stay in this file.
import js from "@eslint/js";
import globals from "globals";

const SINK = "HTML sink: strings from a tokenizer are data; use textContent / the h() helper";

export default [
  { ignores: ["node_modules/"] },
  js.configs.recommended,
  {
    files: ["**/*.js", "**/*.mjs"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser, ...globals.node },
    },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", caughtErrors: "none" }],
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-restricted-properties": [
        "error",
        { property: "innerHTML", message: SINK },
        { property: "outerHTML", message: SINK },
        { property: "insertAdjacentHTML", message: SINK },
        { object: "document", property: "write", message: SINK },
        { object: "document", property: "writeln", message: SINK },
      ],
      "no-restricted-syntax": [
        "error",
        { selector: "MemberExpression[property.name=/^(innerHTML|outerHTML|insertAdjacentHTML)$/]", message: SINK },
        { selector: "MemberExpression[property.value=/^(innerHTML|outerHTML|insertAdjacentHTML)$/]", message: SINK },
        { selector: "CallExpression[callee.name='eval']", message: "eval: no code from strings" },
        { selector: "NewExpression[callee.name='Function']", message: "new Function: no code from strings" },
        { selector: "CallExpression[callee.name='Function']", message: "Function(): no code from strings" },
        { selector: "CallExpression[callee.property.name=/^(write|writeln)$/][callee.object.name='document']", message: SINK },
      ],
    },
  },
];
