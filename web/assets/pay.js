// The pay page: the customer confirms an overage charge their bank held for authentication.
(function () {
  "use strict";
  const root = document.getElementById("pay");
  const token = root.dataset.token;
  const message = document.getElementById("message");
  let clientSecret = null;

  function show(state) {
    root.dataset.state = state;
    for (const id of ["loading", "due", "paid", "problem"]) document.getElementById(id).hidden = id !== state;
  }

  async function load() {
    let resp;
    try {
      resp = await fetch("/api/pay/" + encodeURIComponent(token), { cache: "no-store" });
    } catch (e) {
      return show("problem");
    }
    if (!resp.ok) return show("problem");
    const body = await resp.json();
    if (body.status === "paid") return show("paid");
    if (body.status !== "due") return show("problem");
    clientSecret = body.clientSecret;
    document.getElementById("amount").textContent = body.amountDisplay;
    show("due");
  }

  document.getElementById("confirm").addEventListener("click", async () => {
    message.textContent = "";
    if (typeof window.Stripe !== "function") {
      message.textContent = "The payment form could not load. Check your connection and reload the page.";
      return;
    }
    const button = document.getElementById("confirm");
    button.disabled = true;
    const stripe = window.Stripe(root.dataset.publishableKey);
    const result = await stripe.confirmCardPayment(clientSecret);
    if (result && result.error) {
      message.textContent = result.error.message || "The payment did not go through.";
      button.disabled = false;
      return;
    }
    const resp = await fetch("/api/pay/" + encodeURIComponent(token) + "/refresh", { method: "POST" });
    const body = await resp.json().catch(() => ({}));
    if (body.status === "paid") return show("paid");
    message.textContent = "We are still waiting for your bank. Reload this page in a minute.";
    button.disabled = false;
  });

  load();
})();
