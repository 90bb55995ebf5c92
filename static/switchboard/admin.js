/* Switchboard's additions to the admin: copy buttons.

   <button data-copy="#element-id"> copies the text of that element. The Clipboard API needs a
   secure context (https, or localhost); elsewhere the text is selected and copied the old way. */
(function () {
  "use strict";

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(button) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = "Copied";
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { copied(button); },
        function () { selectText(source); }
      );
    } else {
      selectText(source);
      if (document.execCommand("copy")) copied(button);
    }
  });
})();
