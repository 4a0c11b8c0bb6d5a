// The top-up page: start the PaymentIntent for the chosen pack, mount Stripe's Payment
// Element, confirm, then wait until the webhook has credited the minutes to the code.
(function () {
  "use strict";
  const root = document.getElementById("top-up");
  const cont = document.getElementById("continue");
  const pay = document.getElementById("pay");
  const message = document.getElementById("message");
  const choices = Array.from(document.querySelectorAll('input[name="pack"]'));
  const link = { order: root.dataset.order, token: root.dataset.token };
  let stripe = null;
  let elements = null;
  let paymentIntent = null;
  const stripeLoaded = new Promise((resolve) => {
    if (!root.dataset.stripeJs) return resolve(false);
    const tag = document.createElement("script");
    tag.src = root.dataset.stripeJs;
    tag.onload = () => resolve(true);
    tag.onerror = () => resolve(false);
    document.head.appendChild(tag);
  });

  function say(text) { message.textContent = text || ""; }
  function chosen() { return choices.find((c) => c.checked) || choices[0] || null; }

  choices.forEach((choice) => choice.addEventListener("change", () => {
    document.getElementById("pay-amount").textContent = chosen().dataset.price;
    if (elements) {
      elements = null;
      document.getElementById("payment-element").replaceChildren();
      pay.hidden = true;
      cont.hidden = false;
      root.dataset.state = "choose";
    }
  }));

  // Asks until the webhook has credited the top-up (it may come after the redirect).
  async function waitForCredit(pi) {
    root.dataset.state = "confirming";
    say("Payment received; adding your minutes…");
    const query = new URLSearchParams({ order: link.order, token: link.token, payment_intent: pi });
    for (let i = 0; i < 120; i++) {
      try {
        const resp = await fetch("/api/top-up/status?" + query, { cache: "no-store" });
        const body = await resp.json().catch(() => ({}));
        if (resp.ok && body.credited) {
          say("");
          document.getElementById("left").textContent = body.left;
          document.getElementById("done").hidden = false;
          document.getElementById("packs").hidden = true;
          document.getElementById("how").hidden = true;
          cont.hidden = true;
          pay.hidden = true;
          root.dataset.state = "done";
          return;
        }
      } catch (e) { /* try again */ }
      await new Promise((r) => setTimeout(r, 1000));
    }
    say("Your payment went through; the minutes will show on your account page shortly.");
  }

  cont.addEventListener("click", async () => {
    say("");
    cont.disabled = true;
    await stripeLoaded;
    if (typeof window.Stripe !== "function") {
      say("The payment form could not load. Check your connection and reload the page.");
      cont.disabled = false;
      return;
    }
    try {
      const resp = await fetch("/api/top-up", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ order: link.order, token: link.token, pack: chosen() ? chosen().value : "" }),
      });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        say(body.error || "Something went wrong. Please try again.");
        cont.disabled = false;
        return;
      }
      paymentIntent = body.paymentIntent;
      root.dataset.paymentIntent = paymentIntent;
      stripe = stripe || window.Stripe(root.dataset.publishableKey);
      elements = stripe.elements({ clientSecret: body.clientSecret });
      elements.create("payment").mount("#payment-element");
      cont.hidden = true;
      cont.disabled = false;
      pay.hidden = false;
      root.dataset.state = "pay";
    } catch (e) {
      say("We could not reach the server. Please try again.");
      cont.disabled = false;
    }
  });

  pay.addEventListener("click", async () => {
    say("");
    pay.disabled = true;
    const result = await stripe.confirmPayment({
      elements,
      redirect: "if_required",
      confirmParams: { return_url: window.location.href.split("?")[0] },
    });
    pay.disabled = false;
    if (result && result.error) {
      say(result.error.message || "The payment did not go through.");
      return;
    }
    waitForCredit(paymentIntent);
  });

  // Back from a payment method that redirects: Stripe names the PaymentIntent.
  const returned = new URLSearchParams(window.location.search).get("payment_intent");
  if (returned) waitForCredit(returned);
})();
