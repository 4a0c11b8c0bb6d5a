// The storefront: create the PaymentIntent for the chosen consent, mount Stripe's Payment
// Element, confirm, and let Stripe redirect to success.html.
(function () {
  "use strict";
  const root = document.getElementById("storefront");
  const consent = document.getElementById("overage");
  const email = document.getElementById("email");
  const phone = document.getElementById("phone");
  const cont = document.getElementById("continue");
  const pay = document.getElementById("pay");
  const message = document.getElementById("message");
  const choices = Array.from(document.querySelectorAll('input[name="plan"]'));
  let stripe = null;
  let elements = null;
  // Stripe.js, loaded only when the shop is open (a closed shop loads nothing of Stripe's).
  const stripeLoaded = new Promise((resolve) => {
    if (!root.dataset.stripeJs) return resolve(false);
    const tag = document.createElement("script");
    tag.src = root.dataset.stripeJs;
    tag.onload = () => resolve(true);
    tag.onerror = () => resolve(false);
    document.head.appendChild(tag);
  });

  function say(text) { message.textContent = text || ""; }

  function reset() {
    // Consent decides how the PaymentIntent is made, so a change starts again.
    elements = null;
    document.getElementById("payment-element").replaceChildren();
    pay.hidden = true;
    cont.hidden = false;
    cont.disabled = false;
    root.dataset.state = "choose";
  }

  consent.addEventListener("change", () => { if (elements) reset(); });

  // The chosen plan's price and minutes shown; the server prices it again from its id.
  function chosen() {
    return choices.find((c) => c.checked) || choices[0] || null;
  }
  choices.forEach((choice) => choice.addEventListener("change", () => {
    const plan = chosen();
    document.getElementById("price").textContent = plan.dataset.price;
    document.getElementById("pay-amount").textContent = plan.dataset.price;
    document.getElementById("minutes").textContent = plan.dataset.minutes;
    if (elements) reset();
  }));

  cont.addEventListener("click", async () => {
    say("");
    cont.disabled = true;
    await stripeLoaded;
    cont.disabled = false;
    if (typeof window.Stripe !== "function") {
      say("The payment form could not load. Check your connection and reload the page.");
      return;
    }
    cont.disabled = true;
    try {
      const resp = await fetch("/api/create-payment-intent", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          plan: chosen() ? chosen().value : null,
          overage_accepted: consent.checked,
          email: email.value || null,
          phone: phone.value || null,
        }),
      });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        say(body.error || "Something went wrong. Please try again.");
        cont.disabled = false;
        return;
      }
      stripe = stripe || window.Stripe(root.dataset.publishableKey);
      elements = stripe.elements({ clientSecret: body.clientSecret });
      elements.create("payment").mount("#payment-element");
      cont.hidden = true;
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
      confirmParams: { return_url: window.location.origin + "/success.html" },
    });
    // Only reached on an error: on success Stripe redirects.
    if (result && result.error) say(result.error.message || "The payment did not go through.");
    pay.disabled = false;
  });
})();
