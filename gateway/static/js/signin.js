// Sign in with an API bearer token: the page asks the API who the token is (GET /api/v1/me).
// An open demo gateway answers local clients without a token.

import { ApiError, get, session } from "./api.js";
import { t } from "./i18n.js";

export async function signIn(dialog) {
  for (;;) {
    try {
      return await get("/api/v1/me");
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
      session.token = "";
      const error = dialog.querySelector(".error");
      error.textContent = dialog.dataset.tried ? t("refused", { d: err.detail }) : "";
      dialog.dataset.tried = "1";
      session.token = await askToken(dialog);
    }
  }
}

function askToken(dialog) {
  return new Promise((resolve) => {
    const form = dialog.querySelector("form");
    const input = dialog.querySelector("input");
    input.value = "";
    form.onsubmit = (e) => {
      e.preventDefault();
      dialog.close();
      resolve(input.value.trim());
    };
    dialog.showModal();
    input.focus();
  });
}

export function signOut() {
  session.token = "";
  location.reload();
}
