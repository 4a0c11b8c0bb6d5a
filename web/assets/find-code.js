// Find my code: the address goes to the server, which sends the codes to it (never here).
(function () {
  "use strict";
  const root = document.getElementById("find-code");
  const form = document.getElementById("find-form");
  const message = document.getElementById("message");
  const button = document.getElementById("send");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    button.disabled = true;
    try {
      const resp = await fetch("/api/find-code", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ contact: document.getElementById("contact").value }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 202) {
        message.textContent = body.message;
        root.dataset.state = "sent";
      } else if (resp.status === 429) {
        message.textContent = "Too many requests. Please try again in a few minutes.";
      } else {
        message.textContent = body.error || "Something went wrong. Please try again.";
      }
    } catch (e) {
      message.textContent = "We could not reach the server. Please try again.";
    }
    button.disabled = false;
  });
})();
