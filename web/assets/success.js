// The success page: after Stripe's redirect, wait for the webhook to fulfil the order, then
// show the access code and the number to call.
(function () {
  "use strict";
  const POLL_MS = 1000;
  const GIVE_UP_MS = 60000;
  const MIN_LOADING_MS = 400;
  const root = document.getElementById("success");
  const params = new URLSearchParams(window.location.search);
  const pi = params.get("payment_intent");
  const secret = params.get("payment_intent_client_secret");
  const started = Date.now();

  function show(state) {
    root.dataset.state = state;
    for (const id of ["loading", "done", "problem"]) document.getElementById(id).hidden = id !== state;
  }

  function problem(title, text) {
    document.getElementById("problem-title").textContent = title;
    document.getElementById("problem-text").textContent = text;
    show("problem");
  }

  function done(order) {
    document.getElementById("code").textContent = order.codeDisplay || order.code;
    const phone = document.getElementById("phone");
    const callNow = document.getElementById("call-now");
    phone.textContent = order.phoneDisplay || order.phone || "our number";
    if (order.phone) {
      phone.href = "tel:" + order.phone;
      callNow.href = "tel:" + order.phone;
    } else {
      callNow.hidden = true;
    }
    if (order.browserPhone) {
      const browserPhone = document.getElementById("browser-phone");
      browserPhone.href = order.browserPhone;
      browserPhone.hidden = false;
    }
    if (order.sentTo && order.sentTo.length) {
      document.getElementById("sent-to-list").textContent = order.sentTo.join(" and ");
      document.getElementById("sent-to").hidden = false;
    }
    if (order.account) {
      document.getElementById("account").href = order.account;
      document.getElementById("account-line").hidden = false;
    }
    document.getElementById("plan").textContent = order.plan || "";
    document.getElementById("amount").textContent = order.amountDisplay || "";
    document.getElementById("paid-at").textContent = order.paidAt
      ? new Date(order.paidAt).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })
      : "";
    document.getElementById("reference").textContent = order.reference || "";
    document.getElementById("minutes").textContent =
      "Your code includes " + order.minutes + " minute" + (order.minutes === 1 ? "" : "s") + " of talk time.";
    document.getElementById("overage").textContent = order.overage
      ? "Extra minutes beyond that are charged at " + order.overagePrice + " each, to this card, after the call."
      : "The call ends politely when your minutes are used up.";
    show("done");
  }

  async function poll() {
    let resp;
    try {
      resp = await fetch("/api/order-details?payment_intent=" + encodeURIComponent(pi) +
                         "&client_secret=" + encodeURIComponent(secret), { cache: "no-store" });
    } catch (e) {
      return later();
    }
    if (resp.status === 404) {
      return problem("We could not find this payment",
        "This link does not match a payment of ours. If you paid, use the link from your payment confirmation.");
    }
    if (!resp.ok) return later();
    const order = await resp.json();
    if (order.status === "paid" && order.code) {
      const wait = Math.max(0, MIN_LOADING_MS - (Date.now() - started));
      return setTimeout(() => done(order), wait);
    }
    if (order.status === "failed") {
      return problem("Your payment did not go through", "No money was taken. Please go back and try another card.");
    }
    if (order.status === "revoked") {
      return problem("This order is no longer active", "It was refunded or disputed. Contact us if this is a mistake.");
    }
    return later();
  }

  function later() {
    if (Date.now() - started > GIVE_UP_MS) {
      return problem("Still confirming your payment",
        "This is taking longer than usual. Your payment is safe: reload this page in a minute, " +
        "or contact us with reference " + pi + ".");
    }
    setTimeout(poll, POLL_MS);
  }

  if (!pi || !secret) {
    problem("We could not find this payment", "This page needs the link Stripe sends you to after paying.");
  } else if (params.get("redirect_status") === "failed") {
    problem("Your payment did not go through", "No money was taken. Please go back and try another card.");
  } else {
    poll();
  }
})();
