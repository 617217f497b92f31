// Login form: shown when the daemon wants a session (a 401, or the WebSocket
// asking for auth). Posts {username, password} as JSON; the daemon sets an
// HttpOnly cookie, the page keeps only the role hint.

import { login } from "../api.js";
import { h } from "../dom.js";

export function mount(root, params, ctx) {
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
  const msg = h("p", { class: "error", id: "login-error", role: "alert" });
  const btn = h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in");
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h2", null, "Log in to dockwire"),
    h("label", null, "User", user),
    h("label", null, "Password", pass),
    btn,
    msg,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    btn.disabled = true;
    msg.textContent = "";
    const r = await login(user.value, pass.value);
    btn.disabled = false;
    pass.value = "";
    if (r.ok) ctx.loggedIn();
    else msg.textContent = r.message;
  });
  root.appendChild(h("section", { class: "view", id: "view-login" }, form));
  user.focus();
  return () => {};
}
