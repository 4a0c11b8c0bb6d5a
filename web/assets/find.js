// The account finder: the typed code goes to the server, which answers with the account's
// link (a wrong code and an unknown one get the same answer; too many are refused).
(function () {
  "use strict";
  const form = document.getElementById("find-form");
  const message = document.getElementById("message");
  const button = document.getElementById("open");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    button.disabled = true;
    try {
      const resp = await fetch("/api/account/find", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ code: document.getElementById("code").value }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.ok && body.account) {
        window.location.assign(body.account);
        return;
      }
      message.textContent = resp.status === 404
        ? "No code matches. Check the digits and try again."
        : body.error || "Something went wrong. Please try again.";
    } catch (e) {
      message.textContent = "We could not reach the server. Please try again.";
    }
    button.disabled = false;
  });
})();
