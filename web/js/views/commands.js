// Commands view (#/commands, admins): run a command an agent allows
// (`command` with server_id and request_id) and see command_accepted, then
// the command_response output, exit code and duration.

import { h, replace } from "../dom.js";
import { ago } from "../format.js";
import { isAdmin, on, serverName, store } from "../store.js";

export function mount(root, params, ctx) {
  if (!isAdmin()) {
    root.appendChild(h("section", { class: "view" }, h("h2", null, "Commands"), h("p", { class: "muted" }, "Commands need the admin role.")));
    return () => {};
  }
  const server = h("select", { id: "cmd-server" });
  const input = h("input", { id: "cmd-input", placeholder: "uptime", autocomplete: "off" });
  const run = h("button", { id: "cmd-run", class: "primary", type: "submit" }, "Run");
  const out = h("div", { id: "cmd-results" });
  const form = h("form", { class: "toolbar" }, server, input, run);
  const note = h("p", { class: "muted small" });
  root.appendChild(
    h(
      "section",
      { class: "view", id: "view-commands" },
      h("h2", null, "Commands"),
      h("p", { class: "muted small" }, "Agents run only the exact commands they were started with (--allow-command); anything else is refused."),
      form,
      note,
      out,
    ),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const cmd = input.value.trim();
    if (!cmd || !server.value) return;
    ctx.relayCommand(server.value, cmd);
  });
  let sig = null;
  const renderServers = () => {
    const agents = [...store.servers.values()].filter((s) => !s.local && (!Array.isArray(s.capabilities) || !s.capabilities.length || s.capabilities.includes("commands")));
    // Rebuilt only when the list changed (metrics come every second).
    const now = JSON.stringify([agents.map((s) => [s.server_id, s.name, s.online]), store.features.list_servers]);
    if (now === sig) return;
    sig = now;
    const was = server.value;
    replace(
      server,
      agents.length
        ? agents.map((s) => h("option", { value: s.server_id, selected: s.server_id === was }, `${s.name || s.server_id}${s.online ? "" : " (offline)"}`))
        : h("option", { value: "" }, "no agent"),
    );
    run.disabled = !agents.length;
    note.textContent = agents.length
      ? ""
      : store.features.list_servers === false
        ? "This daemon does not list its agents yet."
        : "No agent is connected. The local host runs no shell commands.";
  };
  const renderResults = () => {
    const items = [];
    for (const rid of store.commandOrder) {
      const c = store.commands.get(rid);
      if (!c || c.kind !== "command") continue;
      items.push(
        h(
          "div",
          { class: `cmd-result ${c.state}` },
          h(
            "div",
            { class: "cmd-head" },
            h("b", null, serverName(c.server_id)),
            " $ ",
            h("span", { class: "mono" }, c.command),
            h("span", { class: `badge ${c.state}` }, c.state),
            c.exit_code !== undefined ? h("span", { class: "muted small" }, ` exit ${c.exit_code}`) : null,
            c.duration_ms !== undefined ? h("span", { class: "muted small" }, ` ${c.duration_ms} ms`) : null,
            h("span", { class: "muted small" }, ` ${ago(c.sentAt)}`),
          ),
          c.output ? h("pre", { class: "cmd-output" }, c.output) : null,
        ),
      );
    }
    replace(out, items);
  };
  renderServers();
  renderResults();
  const offs = [on("servers", renderServers), on("commands", renderResults)];
  return () => offs.forEach((f) => f());
}
