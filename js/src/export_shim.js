// The offline HTML export's page script (circwidgets/widgets/export.py): a classic script that
// defines `window.__cwPage.boot(data, modules)`; the page calls it after the view modules loaded.
import { bootPage } from "./lib/shim.js";

window.__cwPage = {
  boot(data, modules) {
    const page = bootPage(data, modules, (i) => document.getElementById("cw-view-" + i));
    window.__cwLog = page.log;
    document.body.dataset.cwReady = "1";
    return page;
  },
};
