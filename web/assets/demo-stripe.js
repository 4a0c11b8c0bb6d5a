// callgate demo: a stand-in for Stripe.js with the few calls callgate's pages make. It draws
// a plain "card" form (no real card is ever asked for) and confirms through the demo's own
// Stripe, which then sends callgate the same signed webhook Stripe would.
(function () {
  "use strict";
  const TEST_CARD = "4242 4242 4242 4242";

  async function confirm(clientSecret, card) {
    const resp = await fetch("/demo/stripe/confirm", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ client_secret: clientSecret, card: card }),
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      return { error: { message: (body.error && body.error.message) || "The demo payment failed." } };
    }
    return { paymentIntent: body };
  }

  window.Stripe = function () {
    return {
      elements(options) {
        const clientSecret = options && options.clientSecret;
        return {
          _clientSecret: clientSecret,
          create() {
            return {
              mount(selector) {
                const host = document.querySelector(selector);
                if (!host) return;
                const box = document.createElement("div");
                box.className = "demo-card";
                const label = document.createElement("label");
                label.className = "field";
                label.textContent = "Card number (demo: nothing is charged; 4000 0000 0000 0002 declines)";
                const input = document.createElement("input");
                input.id = "demo-card";
                input.inputMode = "numeric";
                input.value = TEST_CARD;
                label.appendChild(input);
                box.appendChild(label);
                host.replaceChildren(box);
              },
            };
          },
        };
      },
      async confirmPayment({ elements, confirmParams }) {
        const input = document.getElementById("demo-card");
        const result = await confirm(elements._clientSecret, input ? input.value : TEST_CARD);
        if (result.error) return result;
        const pi = result.paymentIntent;
        const url = new URL(confirmParams.return_url, window.location.href);
        url.searchParams.set("payment_intent", pi.id);
        url.searchParams.set("payment_intent_client_secret", elements._clientSecret);
        url.searchParams.set("redirect_status", "succeeded");
        window.location.assign(url.toString());
        return {};
      },
      async confirmCardPayment(clientSecret) {
        return confirm(clientSecret, TEST_CARD);
      },
    };
  };
})();
