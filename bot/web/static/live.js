// Live standings: the server sends the ranking of every slot while voting is open
// (server-sent events); rows are moved and their numbers changed in place. Text from
// members is set with textContent only, never as HTML.
(function () {
  "use strict";
  var root = document.getElementById("standings");
  if (!root || !root.dataset.events || !window.EventSource) return;
  var mediaBase = root.dataset.media;
  var clipBase = root.dataset.clips;

  function text(el, sel, value) {
    var node = el.querySelector(sel);
    if (node) node.textContent = value;
  }

  function build(c) {
    var li = document.createElement("li");
    li.dataset.clip = String(c.id);
    var video = document.createElement("video");
    video.controls = true;
    video.preload = "metadata";
    video.setAttribute("playsinline", "");
    video.src = mediaBase + c.media;
    li.appendChild(video);
    var info = document.createElement("div");
    var score = document.createElement("span");
    score.className = "score";
    info.appendChild(score);
    info.appendChild(document.createTextNode(" "));
    var votes = document.createElement("span");
    votes.className = "meta votes";
    info.appendChild(votes);
    var p = document.createElement("p");
    var who = document.createElement("b");
    who.className = "author";
    who.textContent = c.author;
    p.appendChild(who);
    p.appendChild(document.createTextNode(": "));
    var q = document.createElement("q");
    q.className = "prompt";
    q.textContent = c.prompt;
    p.appendChild(q);
    info.appendChild(p);
    var a = document.createElement("a");
    a.href = clipBase + c.id;
    a.textContent = "clip #" + c.id;
    info.appendChild(a);
    li.appendChild(info);
    return li;
  }

  function place(list, clips) {
    if (!list) return;
    var keep = {};
    clips.forEach(function (c, i) {
      keep[c.id] = true;
      var li = root.querySelector('li[data-clip="' + c.id + '"]') || build(c);
      text(li, ".score", (c.score > 0 ? "+" : "") + c.score);
      text(li, ".votes", c.up + " up · " + c.down + " down");
      var at = list.children[i] || null;
      if (at !== li) list.insertBefore(li, at);
    });
    Array.prototype.slice.call(list.children).forEach(function (li) {
      if (li.dataset.clip && !keep[li.dataset.clip]) list.removeChild(li);
    });
    var empty = list.querySelector(".empty");
    if (empty) empty.hidden = clips.length > 0;
  }

  var source = new EventSource(root.dataset.events);
  source.onmessage = function (event) {
    var data = JSON.parse(event.data);
    data.slots.forEach(function (s) {
      place(root.querySelector('.slot[data-slot="' + s.index + '"] ol'), s.clips);
    });
    var any = root.querySelector(".unslotted");
    place(any && any.querySelector("ol"), data.unslotted);
    if (any) any.hidden = data.unslotted.length === 0;
    root.dataset.updated = String(Date.now());
    if (!data.live) {
      source.close();
      var state = document.getElementById("state");
      if (state) state.textContent = "Voting is closed. Reload for the final page.";
    }
  };
  source.addEventListener("gone", function () { source.close(); });
})();
